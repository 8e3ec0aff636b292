# Source me: activates the venv (~/.cache/usp_ros/venv-<checkout hash>) and the colcon install space,
# and keeps DDS on this machine.
#   . scripts/env.sh                      everything (after scripts/bootstrap.sh)
#   . scripts/env.sh --no-install-space   only the venv and the ament prefix (used to build)
_usp_root=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)
export VIRTUAL_ENV=${USP_VENV:-$HOME/.cache/usp_ros/venv-$(echo "$_usp_root" | sha1sum | cut -c1-10)}
export PATH=$VIRTUAL_ENV/bin:$PATH
if [ -z "${ROS_DISTRO:-}" ]; then
  # The PyPI ROS 2 wheels make the venv itself the ament prefix.
  export AMENT_PREFIX_PATH=$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}
  export CMAKE_PREFIX_PATH=$VIRTUAL_ENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}
fi
if [ "${1:-}" != "--no-install-space" ] && [ -f "$_usp_root/install/setup.sh" ]; then
  COLCON_CURRENT_PREFIX=$_usp_root/install . "$_usp_root/install/setup.sh"
fi
# Discovery stays on localhost unless the caller chose otherwise.
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
# Large images over best-effort Fast DDS need a bigger shared-memory segment on the publisher.
export FASTDDS_DEFAULT_PROFILES_FILE=${FASTDDS_DEFAULT_PROFILES_FILE:-$_usp_root/config/fastdds_large_images.xml}
unset _usp_root
