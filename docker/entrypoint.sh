#!/bin/sh
# bangfu-entrypoint: picks the program a bangfu container runs.
#
#   <service> [args]     runs bangfu-<service> (bus, registry, funds, tasks, notify, gateway),
#                        its log (JSON lines) sent to stdout for `docker logs`
#   bangfu [args]        the operators' CLI, e.g. `bangfu call registry sys.health`
#   [args]               with $BANGFU_SERVICE set: that service with these args
#   anything else        run as a command (e.g. `sh` for a look inside)
#
# Services read every setting from BANGFU_* variables (`<service>
# --help-config` lists them), so nothing here needs editing per deployment.
set -e

usage() {
    echo "usage: docker run IMAGE <service> [--help-config | --version | --migrate-only]"
    echo "       docker run IMAGE bangfu <command> [args]"
    printf 'services in this image:'
    for f in /usr/local/bin/bangfu-*; do
        case "$f" in *-entrypoint) ;; *) printf ' %s' "${f##*/bangfu-}" ;; esac
    done
    echo
}

if [ $# -eq 0 ] || [ "${1#-}" != "$1" ]; then
    if [ -n "${BANGFU_SERVICE:-}" ]; then set -- "$BANGFU_SERVICE" "$@"; fi
fi

case "${1:-}" in
"" | -h | --help | help)
    usage
    exit 0
    ;;
bangfu)
    shift
    exec bangfu "$@"
    ;;
entrypoint)
    echo "bangfu-entrypoint: 'entrypoint' is not a service" >&2
    exit 2
    ;;
-*)
    echo "bangfu-entrypoint: name the service first (or set BANGFU_SERVICE)" >&2
    usage >&2
    exit 2
    ;;
bus | registry | funds | tasks | notify | gateway | [a-z]*)
    if [ -x "/usr/local/bin/bangfu-$1" ]; then
        svc=$1
        shift
        # Services log JSON lines on stderr; hand them to docker on stdout.
        exec "/usr/local/bin/bangfu-$svc" "$@" 2>&1
    fi
    case "$1" in
    bus | registry | funds | tasks | notify | gateway)
        echo "bangfu-entrypoint: this image has no bangfu-$1 (built from a tree without services/$1)" >&2
        exit 127
        ;;
    esac
    ;;
esac
exec "$@"
