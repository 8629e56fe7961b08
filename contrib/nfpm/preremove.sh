#!/bin/sh
# Stop the daemons before their files go away, but only on removal, not on upgrade
# (deb: $1 = remove; rpm: $1 = 0).
set -eu
case "${1:-}" in
    remove | 0)
        if [ -d /run/systemd/system ]; then
            systemctl disable --now labd.service lab-bastion.service lab-agent.service \
                >/dev/null 2>&1 || true
        fi
        ;;
esac
exit 0
