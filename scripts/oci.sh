#!/usr/bin/env bash
# make oci: packages build/locality_failover.wasm as the OCI image an Istio
# WasmPlugin pulls -- what envoy/oci/Dockerfile builds (FROM scratch, one
# layer holding plugin.wasm), written without a Docker engine, with tar,
# gzip and sha256sum only:
#   build/oci/                       OCI image layout: oci-layout, index.json,
#                                    blobs/sha256/{manifest, config, layer}
#   build/locality-failover-oci.tar  the same layout as one archive
# The layer is reproducible (fixed owner, mode and mtime; gzip -n), so the
# same .wasm always gives the same digests.
#   OCI_OUT=DIR   write DIR/oci and DIR/locality-failover-oci.tar instead of build/
#   OCI_TAG=TAG   the tag recorded in index.json (default: the workspace version)
set -euo pipefail
cd "$(dirname "$0")/.."

wasm=build/locality_failover.wasm
out=${OCI_OUT:-build}
layout=$out/oci
archive=$out/locality-failover-oci.tar
version=$(awk -F'"' '/^\[workspace\.package\]/{p=1} p && /^version *=/{print $2; exit}' Cargo.toml)
tag=${OCI_TAG:-$version}

[ -s "$wasm" ] || { echo "oci.sh: $wasm is missing: run make build" >&2; exit 1; }
for tool in tar gzip sha256sum; do
  command -v "$tool" >/dev/null || { echo "oci.sh: $tool is required" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rm -rf "$layout"
mkdir -p "$layout/blobs/sha256"

# Moves a file into the blob store; prints "<sha256 hex> <size>".
blob() {
  local digest size
  digest=$(sha256sum "$1" | cut -d' ' -f1)
  size=$(stat -c %s "$1")
  mv "$1" "$layout/blobs/sha256/$digest"
  echo "$digest $size"
}

# The layer: `COPY locality_failover.wasm ./plugin.wasm` onto scratch.
mkdir "$work/rootfs"
cp "$wasm" "$work/rootfs/plugin.wasm"
tar --format=ustar --owner=0 --group=0 --numeric-owner --mode=0644 --mtime=@0 \
  -C "$work/rootfs" -cf "$work/layer.tar" plugin.wasm
diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
gzip -9 -n -c "$work/layer.tar" > "$work/layer.tar.gz"
read -r layer_digest layer_size < <(blob "$work/layer.tar.gz")

# The image config (architecture/os as Go names WASI: wasm/wasip1).
printf '%s' '{"architecture":"wasm","os":"wasip1","config":{},"rootfs":{"type":"layers","diff_ids":["sha256:'"$diff_id"'"]},"history":[{"created_by":"COPY locality_failover.wasm ./plugin.wasm","comment":"envoy/oci/Dockerfile"}]}' > "$work/config.json"
read -r config_digest config_size < <(blob "$work/config.json")

printf '%s' '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:'"$config_digest"'","size":'"$config_size"'},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:'"$layer_digest"'","size":'"$layer_size"'}],"annotations":{"org.opencontainers.image.title":"locality-failover","org.opencontainers.image.version":"'"$version"'","org.opencontainers.image.description":"proxy-wasm locality failover filter for Envoy and Istio waypoints (plugin.wasm)"}}' > "$work/manifest.json"
read -r manifest_digest manifest_size < <(blob "$work/manifest.json")

printf '%s' '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:'"$manifest_digest"'","size":'"$manifest_size"',"annotations":{"org.opencontainers.image.ref.name":"'"$tag"'"}}]}' > "$layout/index.json"
printf '%s' '{"imageLayoutVersion":"1.0.0"}' > "$layout/oci-layout"

# The archive (oci-archive: the layout's files at the top level).
rm -f "$archive"
tar --format=ustar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
  -C "$layout" -cf "$archive" oci-layout index.json blobs

cat <<MSG
OCI image of $wasm ($(stat -c %s "$wasm") bytes, sha256 $(sha256sum "$wasm" | cut -d' ' -f1)):
  $layout/              OCI image layout, tag $tag
  $archive   the same, as an archive
  manifest sha256:$manifest_digest
  config   sha256:$config_digest
  layer    sha256:$layer_digest (plugin.wasm, gzip; diff_id sha256:$diff_id)
Push it (no Docker engine needed):
  skopeo copy oci-archive:$archive docker://REGISTRY/locality-failover:$tag
  crane push $layout REGISTRY/locality-failover:$tag
or build the same image with Docker: envoy/oci/Dockerfile
  docker build -f envoy/oci/Dockerfile -t REGISTRY/locality-failover:$tag build/
Then in the WasmPlugin (envoy/istio/):
  url: oci://REGISTRY/locality-failover:$tag
  sha256: $manifest_digest   # optional: pins this manifest
MSG
