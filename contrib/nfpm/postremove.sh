#!/bin/sh
# Remove the virtualenv the postinstall script built. Data in /var/lib/lab* and the lab user
# are kept: they hold the CA, the database and agent identities.
set -eu
case "${1:-}" in
    remove | purge | 0)
        rm -rf /opt/labctl
        if [ -d /run/systemd/system ]; then
            systemctl daemon-reload >/dev/null 2>&1 || true
        fi
        ;;
esac
exit 0
