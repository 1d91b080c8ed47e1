# shellcheck shell=bash
# Helpers sourced by the other scripts (run from the repository root).

# go_modules prints the directory of every Go module in the repository,
# "." (the services' module) first. deploy/ is a module of its own so that
# its Kubernetes dependencies stay out of the services' graph; `./...` from
# the root does not reach it.
go_modules() {
  find . -name go.mod -not -path './.git/*' -not -path './.testenv/*' \
    -not -path './bin/*' -not -path '*/testdata/*' -printf '%h\n' |
    sed 's|^\./||' | sort
}

# module_of DIR prints the root of the module that contains DIR.
module_of() {
  local d=$1
  while [ "$d" != . ] && [ ! -f "$d/go.mod" ]; do d=$(dirname "$d"); done
  echo "$d"
}
