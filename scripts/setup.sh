#!/usr/bin/env bash
# Makes sure this machine can build lathe: a Rust toolchain plus the system tools the engines'
# build scripts need (cmake and a C++ compiler for llama.cpp and DuckDB, libclang for bindgen,
# protoc for lance) and tmux for the end-to-end tests. Installs what is missing with apt-get when
# it can (root or sudo); otherwise prints exactly what to install and stops.
set -euo pipefail

missing=()
need() { # need PACKAGE CHECK...
  local pkg=$1; shift
  if ! "$@" >/dev/null 2>&1; then missing+=("$pkg"); fi
}
have_libclang() {
  ldconfig -p 2>/dev/null | grep -q 'libclang[-.0-9]*\.so' && return 0
  compgen -G '/usr/lib/llvm-*/lib/libclang*.so*' >/dev/null
}

if ! command -v cargo >/dev/null 2>&1; then
  echo "lathe needs Rust (cargo): install it from https://rustup.rs, then run this again." >&2
  exit 1
fi
need cmake command -v cmake
need g++ command -v g++
need make command -v make
need libclang-dev have_libclang
need protobuf-compiler command -v protoc
need tmux command -v tmux
need pkg-config command -v pkg-config

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "lathe: installing missing build tools: ${missing[*]}" >&2
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    sudo=()
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
  else
    echo "lathe: cannot install as this user. Run: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  echo "lathe: installed ${missing[*]}" >&2
else
  echo "lathe: no apt-get here. Install these with your package manager, then run this again: ${missing[*]}" >&2
  echo "  (Fedora: cmake gcc-c++ clang-devel protobuf-compiler tmux pkgconf; macOS: brew install cmake llvm protobuf tmux)" >&2
  exit 1
fi
