#!/usr/bin/env bash
# docker/debian-base.sh: make the image debian:bookworm-slim without an image
# registry, from the Debian mirror apt already uses.
#
#   bash docker/debian-base.sh            # needs root (debootstrap) and $DOCKER_HOST or the default socket
#
# debootstrap --variant=minbase bookworm builds the root file system from the
# mirror configured for apt (or $BANGFU_DEBIAN_MIRROR), slimmed the way the
# official debian:*-slim images are (no docs, man pages or translations; apt
# keeps no caches; services never start during package installs), with apt
# sources for bookworm, bookworm-updates and bookworm-security on that mirror.
# The tarball is cached for a week in $BANGFU_CACHE (default
# /var/cache/bangfu as root, else ~/.cache/bangfu), then `docker import`ed as
# debian:bookworm-slim. Where Docker Hub is reachable, `docker pull
# debian:bookworm-slim` does the same job; every bangfu image builds FROM it.
set -euo pipefail

TAG=${BANGFU_BASE_TAG:-debian:bookworm-slim}
if [ "$(id -u)" = 0 ]; then CACHE=${BANGFU_CACHE:-/var/cache/bangfu}; else CACHE=${BANGFU_CACHE:-$HOME/.cache/bangfu}; fi
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
DOCKER=${DOCKER:-docker}

say() { echo "debian-base: $*" >&2; }

# The mirror URIs apt uses for a suite: deb822 .sources files first, then
# one-line sources.list entries. Prints the first URI whose suites include $1.
apt_mirror_for() {
    local suite=$1 f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk -v want="$suite" '
            function flush() {
                if (uris != "" && enabled && types ~ /(^| )deb( |$)/) {
                    n = split(suites, s, " ")
                    for (i = 1; i <= n; i++) if (s[i] == want) { split(uris, u, " "); print u[1]; found = 1; exit }
                }
                uris = ""; suites = ""; types = ""; enabled = 1
            }
            BEGIN { enabled = 1 }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            tolower($1) == "uris:"    { $1 = ""; uris = $0; sub(/^ +/, "", uris) }
            tolower($1) == "suites:"  { $1 = ""; suites = $0; sub(/^ +/, "", suites) }
            tolower($1) == "types:"   { $1 = ""; types = $0 }
            tolower($1) == "enabled:" { enabled = (tolower($2) != "no") }
            END { if (!found) flush() }
        ' "$f" | head -1 | grep . && return 0
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk -v want="$suite" '
            $1 == "deb" {
                i = 2
                if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                if ($(i + 1) == want) { print $i; exit }
            }' "$f" | head -1 | grep . && return 0
    done
    return 1
}

MIRROR=${BANGFU_DEBIAN_MIRROR:-$(apt_mirror_for bookworm || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY=${BANGFU_DEBIAN_SECURITY_MIRROR:-$(apt_mirror_for bookworm-security || true)}
MIRROR=${MIRROR%/}
SECURITY=${SECURITY%/}

# Already there (pulled, or imported by an earlier run against this engine)?
if $DOCKER image inspect "$TAG" >/dev/null 2>&1 && [ -z "${BANGFU_BASE_REBUILD:-}" ]; then
    say "$TAG already present"
    exit 0
fi

week=$(date -u +%G-w%V)
tarball="$CACHE/debian-bookworm-slim-$week.tar.gz"
$SUDO mkdir -p "$CACHE"

if [ ! -s "$tarball" ]; then
    command -v debootstrap >/dev/null || {
        say "installing debootstrap"
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends debootstrap >/dev/null
    }
    work=$($SUDO mktemp -d "${TMPDIR:-/tmp}/bangfu-debootstrap.XXXXXX")
    trap '$SUDO rm -rf "$work"' EXIT
    root="$work/rootfs"
    say "debootstrap --variant=minbase bookworm from $MIRROR (about a minute)"
    if ! $SUDO debootstrap --variant=minbase bookworm "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1; then
        tail -20 "$work/debootstrap.log" >&2
        say "debootstrap failed"
        exit 1
    fi
    # Slim it the way debuerreotype makes the official *-slim images.
    $SUDO tee "$root/etc/dpkg/dpkg.cfg.d/docker" >/dev/null <<'EOF'
# bangfu base image (as debian:*-slim): no documentation or translations
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
    echo 'force-unsafe-io' | $SUDO tee "$root/etc/dpkg/dpkg.cfg.d/docker-apt-speedup" >/dev/null
    $SUDO tee "$root/etc/apt/apt.conf.d/docker-clean" >/dev/null <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    echo 'Acquire::Languages "none";' | $SUDO tee "$root/etc/apt/apt.conf.d/docker-no-languages" >/dev/null
    printf 'Acquire::GzipIndexes "true";\nAcquire::CompressionTypes::Order:: "gz";\n' \
        | $SUDO tee "$root/etc/apt/apt.conf.d/docker-gzip-indexes" >/dev/null
    echo 'Apt::AutoRemove::SuggestsImportant "false";' \
        | $SUDO tee "$root/etc/apt/apt.conf.d/docker-autoremove-suggests" >/dev/null
    printf '#!/bin/sh\n# no services start inside image builds\nexit 101\n' \
        | $SUDO tee "$root/usr/sbin/policy-rc.d" >/dev/null
    $SUDO chmod 0755 "$root/usr/sbin/policy-rc.d"
    # apt sources: the same mirror, as the official image lists them.
    {
        printf 'Types: deb\nURIs: %s\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$MIRROR"
        if [ -n "$SECURITY" ]; then
            printf '\nTypes: deb\nURIs: %s\nSuites: bookworm-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$SECURITY"
        fi
    } | $SUDO tee "$root/etc/apt/sources.list.d/debian.sources" >/dev/null
    $SUDO rm -f "$root/etc/apt/sources.list"
    $SUDO find "$root/usr/share/doc" -mindepth 2 -not -name copyright -not -type d -delete 2>/dev/null || true
    $SUDO find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
    $SUDO rm -rf "$root"/usr/share/man/* "$root"/usr/share/groff/* "$root"/usr/share/info/* \
        "$root"/usr/share/lintian/* "$root"/usr/share/linda/*
    $SUDO find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} + 2>/dev/null || true
    $SUDO rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
        "$root"/var/log/*.log "$root"/var/log/apt/* "$root"/tmp/* "$root"/var/tmp/* "$root/debootstrap"
    : | $SUDO tee "$root/etc/machine-id" "$root/etc/resolv.conf" >/dev/null
    echo localhost | $SUDO tee "$root/etc/hostname" >/dev/null
    say "packing $tarball"
    $SUDO tar --numeric-owner --xattrs -C "$root" -czf "$tarball.part.$$" .
    $SUDO mv "$tarball.part.$$" "$tarball"
    # One week's tarball is enough: drop older ones.
    $SUDO find "$CACHE" -maxdepth 1 -name 'debian-bookworm-slim-*.tar.gz' ! -name "${tarball##*/}" -delete
else
    say "using cached $tarball"
fi

$DOCKER import \
    --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --message "debootstrap --variant=minbase bookworm $MIRROR ($week)" \
    "$tarball" "$TAG" >/dev/null
say "imported $TAG ($($DOCKER image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
