#!/usr/bin/env sh
# Prints the path of a working Python interpreter of the version given (default 3.12), or nothing.
# Order: pythonX.Y on PATH (only if it runs: a pyenv shim for a version that is not active does not),
# then pyenv's installed X.Y.* (newest first; pyenv installs them without putting them on PATH),
# then the usual system locations.
want="${1:-3.12}"
root="$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")"
for p in "python$want" \
         $(ls -d "$root"/versions/"$want".*/bin/python"$want" 2>/dev/null | sort -rV) \
         "/usr/local/bin/python$want" "/usr/bin/python$want"; do
    if "$p" -c "import sys; sys.exit(0 if '%d.%d' % sys.version_info[:2] == '$want' else 1)" >/dev/null 2>&1; then
        "$p" -c "import sys; print(sys.executable)"
        exit 0
    fi
done
exit 1
