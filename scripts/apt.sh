# shellcheck shell=bash
# Sourced: `apt_install PACKAGE...` installs Debian packages, through password-less `sudo -n`
# when not root (GitHub's runners), quietly; on failure it prints apt's output and returns 2.
apt_install() {
  local sudo=() out
  if [ "$(id -u)" != 0 ]; then
    if ! sudo -n true 2>/dev/null; then
      printf 'missing %s: run as root or with password-less sudo, or apt-get install them\n' "$*" >&2
      return 2
    fi
    sudo=(sudo -n)
  fi
  printf '[apt] installing %s\n' "$*" >&2
  if ! out=$({ "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
    && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"; } 2>&1 </dev/null); then
    printf '%s\napt-get install %s failed\n' "$out" "$*" >&2
    return 2
  fi
}
