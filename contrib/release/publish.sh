#!/usr/bin/env bash
# Publish the artifacts of a release tag from dist/ to this Gitea: the sdist and wheel to its
# PyPI registry, the .deb to its Debian registry (bookworm/main), the .rpm to its RPM registry,
# labctl.pyz and SHA256SUMS as a generic package, then a release of the tag with
# dist/release-notes.md as its text and every artifact attached. The release workflow
# (.gitea/workflows/ci.yaml) runs it after `nox -s build -- vX.Y.Z`, `nox -s packages` and
# `nox -s checksums`.
#
# Environment: GITHUB_SERVER_URL, GITHUB_REPOSITORY (owner/name), GITHUB_REF_NAME (the tag),
# set by the runner; RELEASE_USER and RELEASE_TOKEN (secrets; docs/development.md).
set -euo pipefail
cd "$(dirname "$0")/../.."

: "${GITHUB_SERVER_URL:?}" "${GITHUB_REPOSITORY:?}" "${GITHUB_REF_NAME:?}"
: "${RELEASE_USER:?set the RELEASE_USER secret}" "${RELEASE_TOKEN:?set the RELEASE_TOKEN secret}"
tag=$GITHUB_REF_NAME
version=${tag#v}
owner=${GITHUB_REPOSITORY%%/*}
server=${GITHUB_SERVER_URL%/}
packages="$server/api/packages/$owner"
repo_api="$server/api/v1/repos/$GITHUB_REPOSITORY"

sdist=dist/labctl-$version.tar.gz
wheel=dist/labctl-$version-py3-none-any.whl
debs=(dist/labctl_"$version"_*.deb)
rpms=(dist/labctl-"$version"-*.rpm)
for f in "$sdist" "$wheel" "${debs[@]}" "${rpms[@]}" dist/labctl.pyz dist/SHA256SUMS \
    dist/release-notes.md; do
    [ -f "$f" ] || { echo "publish: $f is missing" >&2; exit 1; }
done
(cd dist && sha256sum --quiet -c SHA256SUMS)

# The credentials stay out of argv: curl reads them from a 0600 netrc file.
netrc=$(mktemp)
trap 'rm -f "$netrc"' EXIT
host=${server#*://}
host=${host%%/*}
printf 'machine %s login %s password %s\n' "${host%%:*}" "$RELEASE_USER" "$RELEASE_TOKEN" >"$netrc"
api() { curl --fail-with-body --silent --show-error --netrc-file "$netrc" "$@"; }

echo "publish: $sdist and $wheel to the PyPI registry"
python -c 'import twine' 2>/dev/null || python -m pip install -q twine
TWINE_USERNAME=$RELEASE_USER TWINE_PASSWORD=$RELEASE_TOKEN \
    python -m twine upload --non-interactive --repository-url "$packages/pypi" "$sdist" "$wheel"

for deb in "${debs[@]}"; do
    echo "publish: $deb to the Debian registry (bookworm main)"
    api --upload-file "$deb" "$packages/debian/pool/bookworm/main/upload"
done
for rpm in "${rpms[@]}"; do
    echo "publish: $rpm to the RPM registry"
    api --upload-file "$rpm" "$packages/rpm/upload"
done
for f in dist/labctl.pyz dist/SHA256SUMS; do
    echo "publish: $f as the generic package labctl $version"
    api --upload-file "$f" "$packages/generic/labctl/$version/$(basename "$f")"
done

echo "publish: release $tag"
case $version in *a* | *b* | *rc*) prerelease=true ;; *) prerelease=false ;; esac
body=$(TAG="$tag" PRERELEASE="$prerelease" python - <<'EOF'
import json, os, pathlib
print(json.dumps({
    "tag_name": os.environ["TAG"],
    "name": f"labctl {os.environ['TAG'].removeprefix('v')}",
    "body": pathlib.Path("dist/release-notes.md").read_text(),
    "draft": False,
    "prerelease": os.environ["PRERELEASE"] == "true",
}))
EOF
)
release=$(api -H 'Content-Type: application/json' -d "$body" "$repo_api/releases")
id=$(printf '%s' "$release" | python -c 'import json, sys; print(json.load(sys.stdin)["id"])')
for f in "$sdist" "$wheel" "${debs[@]}" "${rpms[@]}" dist/labctl.pyz dist/SHA256SUMS; do
    api -F "attachment=@$f" "$repo_api/releases/$id/assets?name=$(basename "$f")" >/dev/null
done
echo "publish: done, $server/$GITHUB_REPOSITORY/releases/tag/$tag"
