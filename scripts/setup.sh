#!/usr/bin/env bash
# Makes sure this machine can build and test lathe. It checks for what the build reads, not only
# for commands: a C++ compiler that compiles, cmake and make (llama.cpp, DuckDB), libclang itself
# for bindgen (libclang-cpp, which some machines carry, is not it), protoc together with the
# well-known .proto files it imports (lance), pkg-config, tmux for the end-to-end tests, and
# pdftotext (poppler), which lathe reads PDFs through at run time (the knowledge tests use it).
#
#   scripts/setup.sh          install what is missing (apt-get, dnf or brew), then check again
#   scripts/setup.sh --check  only report what was found, one line each; exit 1 if anything is missing
#
# When it cannot install, it stops before cargo starts and prints the exact line to run.
set -euo pipefail

mode=install
case "${1:-}" in
  --check) mode=check ;;
  "") ;;
  *) echo "usage: scripts/setup.sh [--check]" >&2; exit 2 ;;
esac

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# Each probe prints what it found (a path, a version) and succeeds, or prints why not and fails.
probe_cargo() { command -v cargo >/dev/null && cargo --version; }
probe_cxx() {
  local cxx=${CXX:-}
  if [ -z "$cxx" ]; then
    for c in c++ g++ clang++; do command -v "$c" >/dev/null && { cxx=$c; break; }; done
  fi
  [ -n "$cxx" ] || { echo "no c++, g++ or clang++ on PATH"; return 1; }
  # Compile and link a program that uses the standard library, as llama.cpp and DuckDB do.
  printf '#include <string>\n#include <thread>\nint main(){std::string s("ok");std::thread t([]{});t.join();return s.size()==2?0:1;}\n' \
    >"$scratch/probe.cpp"
  "$cxx" -std=c++17 -pthread "$scratch/probe.cpp" -o "$scratch/probe" 2>"$scratch/cxx.err" \
    || { echo "$cxx cannot compile a C++17 program: $(head -c 200 "$scratch/cxx.err")"; return 1; }
  echo "$(command -v "$cxx") ($("$cxx" --version | head -1))"
}
probe_cmd() { # probe_cmd NAME [VERSION-FLAG]: the command on PATH and its version line
  command -v "$1" >/dev/null || { echo "no $1 on PATH"; return 1; }
  echo "$(command -v "$1") ($("$1" "${2:---version}" 2>&1 | head -1))"
}
probe_libclang() {
  # Where clang-sys (bindgen) looks, and the names it accepts: libclang.so, libclang-N.so,
  # libclang.so.N, libclang-N.so.N (libclang.dylib on macOS). libclang-cpp is a different library.
  local dirs=() d f
  [ -n "${LIBCLANG_PATH:-}" ] && dirs+=("$LIBCLANG_PATH")
  command -v llvm-config >/dev/null && dirs+=("$(llvm-config --libdir)")
  dirs+=(/usr/lib/llvm-*/lib /usr/lib64/llvm*/lib /usr/local/llvm*/lib /usr/lib/x86_64-linux-gnu
         /usr/lib/aarch64-linux-gnu /usr/lib64 /usr/lib /usr/local/lib /opt/homebrew/opt/llvm/lib
         /usr/local/opt/llvm/lib /Library/Developer/CommandLineTools/usr/lib)
  for d in "${dirs[@]}"; do
    [ -d "$d" ] || continue
    for f in "$d"/libclang.so "$d"/libclang-[0-9]*.so "$d"/libclang.so.[0-9]* \
             "$d"/libclang-[0-9]*.so.[0-9]* "$d"/libclang.dylib; do
      [ -e "$f" ] && { echo "$f"; return 0; }
    done
  done
  local other
  other=$(ls /usr/lib/llvm-*/lib/libclang-cpp.so* 2>/dev/null | head -1 || true)
  echo "no libclang.so found${other:+ (only $other, which bindgen cannot use)}"
  return 1
}
probe_protoc() {
  local protoc=${PROTOC:-protoc}
  command -v "$protoc" >/dev/null || { echo "no protoc on PATH"; return 1; }
  echo "$(command -v "$protoc") ($("$protoc" --version 2>&1 | head -1))"
}
probe_proto_includes() {
  # Compile what lance's build compiles: a file importing protobuf's well-known types.
  local protoc=${PROTOC:-protoc}
  command -v "$protoc" >/dev/null || { echo "needs protoc first"; return 1; }
  printf 'syntax = "proto3";\nimport "google/protobuf/empty.proto";\nimport "google/protobuf/timestamp.proto";\nmessage M { google.protobuf.Empty e = 1; google.protobuf.Timestamp t = 2; }\n' \
    >"$scratch/probe.proto"
  if ! (cd "$scratch" && "$protoc" --descriptor_set_out=probe.pb probe.proto) 2>"$scratch/protoc.err"; then
    echo "protoc cannot import google/protobuf/empty.proto: $(head -1 "$scratch/protoc.err")"
    return 1
  fi
  local inc
  for inc in "$(dirname "$(command -v "$protoc")")/../include" /usr/include /usr/local/include \
             /opt/homebrew/include; do
    [ -f "$inc/google/protobuf/empty.proto" ] && { echo "$(cd "$inc" && pwd)/google/protobuf/empty.proto"; return 0; }
  done
  echo "imports resolve (protoc's own include path)"
}

# name | probe | Debian package(s) | Fedora | Homebrew
checks=(
  "C++ compiler|probe_cxx|g++|gcc-c++|"
  "make|probe_cmd make|make|make|make"
  "cmake|probe_cmd cmake|cmake|cmake|cmake"
  "pkg-config|probe_cmd pkg-config|pkg-config|pkgconf|pkgconf"
  "libclang|probe_libclang|libclang-dev|clang-devel|llvm"
  "protoc|probe_protoc|protobuf-compiler|protobuf-compiler|protobuf"
  "protobuf includes|probe_proto_includes|libprotobuf-dev|protobuf-devel|protobuf"
  "tmux|probe_cmd tmux -V|tmux|tmux|tmux"
  "pdftotext|probe_cmd pdftotext -v|poppler-utils|poppler-utils|poppler"
)

apt_pkgs=() dnf_pkgs=() brew_pkgs=() missing=()
run_checks() { # run_checks VERBOSE: fills missing and the package lists
  local verbose=$1 entry name probe deb fed brew found
  apt_pkgs=() dnf_pkgs=() brew_pkgs=() missing=()
  for entry in "${checks[@]}"; do
    IFS='|' read -r name probe deb fed brew <<<"$entry"
    if found=$($probe 2>&1); then
      [ "$verbose" = 1 ] && printf '  ok       %-18s %s\n' "$name" "$found"
    else
      [ "$verbose" = 1 ] && printf '  MISSING  %-18s %s\n' "$name" "$found"
      missing+=("$name")
      apt_pkgs+=($deb) dnf_pkgs+=($fed)
      [ -n "$brew" ] && brew_pkgs+=($brew)
    fi
  done
  return 0
}
uniq_words() { printf '%s\n' "$@" | awk 'NF && !seen[$0]++' | tr '\n' ' ' | sed 's/ $//'; }
install_lines() {
  echo "  Debian/Ubuntu: sudo apt-get install -y --no-install-recommends $(uniq_words "${apt_pkgs[@]}")"
  echo "  Fedora:        sudo dnf install -y $(uniq_words "${dnf_pkgs[@]}")"
  if [ ${#brew_pkgs[@]} -gt 0 ]; then
    echo "  macOS:         brew install $(uniq_words "${brew_pkgs[@]}")"
  else
    echo "  macOS:         xcode-select --install"
  fi
}

if ! cargo_version=$(probe_cargo 2>/dev/null); then
  echo "lathe needs Rust (cargo): install it from https://rustup.rs, then run this again." >&2
  exit 1
fi

if [ "$mode" = check ]; then
  echo "lathe build prerequisites on $(uname -sm):"
  printf '  ok       %-18s %s\n' cargo "$cargo_version"
  run_checks 1
  if [ ${#missing[@]} -gt 0 ]; then
    echo "missing: ${missing[*]}; install them with:"
    install_lines
    exit 1
  fi
  exit 0
fi

run_checks 0
[ ${#missing[@]} -eq 0 ] && exit 0

echo "lathe: missing build prerequisites: ${missing[*]}" >&2
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
  elif ! command -v brew >/dev/null; then
    echo "lathe: cannot install as this user (no root, no password-less sudo). Run one of these, then run this again:" >&2
    install_lines >&2
    exit 1
  fi
fi
if command -v apt-get >/dev/null; then
  pkgs=$(uniq_words "${apt_pkgs[@]}")
  echo "lathe: apt-get install $pkgs" >&2
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
elif command -v dnf >/dev/null; then
  pkgs=$(uniq_words "${dnf_pkgs[@]}")
  echo "lathe: dnf install $pkgs" >&2
  "${sudo[@]}" dnf install -y -q $pkgs
elif command -v brew >/dev/null && [ ${#brew_pkgs[@]} -gt 0 ]; then
  pkgs=$(uniq_words "${brew_pkgs[@]}")
  echo "lathe: brew install $pkgs" >&2
  brew install $pkgs
  # Homebrew's llvm is keg-only: bindgen finds it through LIBCLANG_PATH.
  case " $pkgs " in *" llvm "*) echo "lathe: export LIBCLANG_PATH=$(brew --prefix llvm)/lib before building" >&2 ;; esac
else
  echo "lathe: no apt-get, dnf or brew here. Install these with your package manager, then run this again:" >&2
  install_lines >&2
  exit 1
fi

# Check again: an install that did not bring what the build reads stops here, not in cargo.
run_checks 0
if [ ${#missing[@]} -gt 0 ]; then
  echo "lathe: still missing after installing: ${missing[*]}. What was found:" >&2
  run_checks 1 >&2
  exit 1
fi
echo "lathe: build prerequisites installed" >&2
