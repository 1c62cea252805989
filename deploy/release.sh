#!/bin/sh
# deploy/release.sh [VERSION]: a release of relay into dist/ (or $DIST):
#
#   relay_<version>_linux_amd64, relay_<version>_linux_arm64   static binaries
#   relay_<debversion>_amd64.deb, relay_<debversion>_arm64.deb packages (deploy/deb/)
#   SHA256SUMS                                                 checksums of the above
#
# VERSION is a tag such as v1.2.3 or v1.3.0-rc.1 (default: the tag on HEAD, else a Go
# pseudo-version after the latest tag, e.g. v1.2.4-0.20261205103000-7e2378c1a2b3);
# <version> drops the v and <debversion> also turns - into ~ (1.3.0~rc.1), so that a
# pre-release sorts before its release for dpkg as for Go. `relay version` prints the
# version and the Git revision, stamped in with -ldflags -X, so they are right even where
# the go command cannot read Git. Needs Go and, for the revision and the default
# version, git; nothing else (nfpm comes from deploy/deb/go.mod).
#
# Environment: REVISION (default: git rev-parse HEAD, with -dirty for uncommitted
# changes), ARCHS (default "amd64 arm64"), DIST (default dist), MAINTAINER (the
# package's "Name <address>"), SOURCE_DATE_EPOCH (timestamps in the packages; default
# the commit time, so that a rebuild gives the same .deb).
set -eu
cd "$(dirname "$0")/.."
root=$(pwd)

version=${1:-${VERSION:-}}
if [ -z "$version" ] && ! git rev-parse --git-dir >/dev/null 2>&1; then
	echo "release.sh: not a Git checkout: give the version, e.g. deploy/release.sh v1.2.3" >&2
	exit 2
fi
if [ -z "$version" ]; then
	if ! version=$(git describe --tags --exact-match --match 'v[0-9]*' 2>/dev/null); then
		# A Go pseudo-version: higher than the latest tag, lower than the next one.
		stamp=$(TZ=UTC git log -1 --date=format-local:%Y%m%d%H%M%S --format=%cd)
		rev12=$(git rev-parse --short=12 HEAD)
		if base=$(git describe --tags --abbrev=0 --match 'v[0-9]*' 2>/dev/null); then
			case $base in
			*-*) version=$base.0.$stamp-$rev12 ;;
			*)
				patch=${base##*.}
				version=${base%.*}.$((patch + 1))-0.$stamp-$rev12
				;;
			esac
		else
			version=v0.0.0-$stamp-$rev12
		fi
	fi
fi
if ! printf '%s\n' "$version" | grep -Eq '^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$'; then
	echo "release.sh: version $version: want v<major>.<minor>.<patch>[-<pre-release>], e.g. v1.2.3" >&2
	exit 2
fi
plain=${version#v}
debversion=$(printf '%s' "$plain" | tr - '~')

if [ -z "${REVISION:-}" ]; then
	if REVISION=$(git rev-parse HEAD 2>/dev/null); then
		git diff --quiet HEAD -- 2>/dev/null || REVISION=$REVISION-dirty
	else
		REVISION=unknown
	fi
fi
archs=${ARCHS:-amd64 arm64}
dist=${DIST:-dist}
mkdir -p "$dist"
dist=$(cd "$dist" && pwd)
: "${SOURCE_DATE_EPOCH:=$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
export SOURCE_DATE_EPOCH
export RELAY_MAINTAINER="${MAINTAINER:-relay developers <relay@example.org>}"
export RELAY_DEB_VERSION="$debversion"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT INT TERM

# Generated once for every architecture: the man page and the changelog, gzipped
# without names or times (-n) so that the packages are reproducible.
gzip -9n <deploy/deb/relay.1 >"$stage/relay.1.gz"
{
	printf 'relay (%s) unstable; urgency=medium\n\n' "$debversion"
	printf '  * relay %s,\n    built from revision %s.\n\n' "$version" "$REVISION"
	printf ' -- %s  %s\n' "$RELAY_MAINTAINER" "$(date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$stage/changelog.gz"
# The unit of deploy/systemd, with the binary where the package puts it.
sed 's|^ExecStart=/usr/local/bin/relay |ExecStart=/usr/bin/relay |' deploy/systemd/relay.service >"$stage/relay.service"
grep -q '^ExecStart=/usr/bin/relay ' "$stage/relay.service" || {
	echo "release.sh: deploy/systemd/relay.service has no ExecStart=/usr/local/bin/relay line to rewrite" >&2
	exit 1
}

pkg=github.com/relayproject/relay/internal/version
files=
for arch in $archs; do
	bin=relay_${plain}_linux_$arch
	# Static (no cgo), no local paths (-trimpath), version and revision from here rather
	# than from Git (-buildvcs=false), no symbol table or DWARF (-s -w: a third of the
	# size; panics still print file:line).
	CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath -buildvcs=false \
		-ldflags "-s -w -X $pkg.version=$version -X $pkg.revision=$REVISION" \
		-o "$dist/$bin" ./cmd/relay
	cp "$dist/$bin" "$stage/relay"
	(
		cd deploy/deb
		RELAY_ARCH=$arch RELAY_STAGE=$stage go tool nfpm package --config nfpm.yaml --packager deb --target "$dist/" >/dev/null
	)
	deb=relay_${debversion}_$arch.deb
	[ -f "$dist/$deb" ] || {
		echo "release.sh: nfpm did not write $dist/$deb" >&2
		exit 1
	}
	files="$files $bin $deb"
done
# shellcheck disable=SC2086 # $files is a list of plain file names
(cd "$dist" && sha256sum $files >SHA256SUMS)
echo "relay $version (revision $REVISION) in $dist:"
(cd "$dist" && ls -l $files SHA256SUMS)
