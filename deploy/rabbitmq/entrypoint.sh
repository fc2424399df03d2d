#!/bin/sh
# Entry point of the rabbitmq service: the image's own entry point, plus passwords.
#
# definitions.json (loaded at every boot) holds the users with empty password hashes, which
# cannot log in. Once the node is up, this gives each user its password from the environment
# (.env) and creates the administrator, then marks the broker ready for the healthcheck.
# It runs at every start, because every boot imports the definitions again.
set -eu

ready=/tmp/saga-users-ready
rm -f "$ready"

docker-entrypoint.sh rabbitmq-server &
server=$!
trap 'kill -TERM "$server" 2>/dev/null' TERM INT

until rabbitmqctl --quiet await_startup >/dev/null 2>&1; do
    if ! kill -0 "$server" 2>/dev/null; then
        wait "$server"
        exit $?
    fi
    sleep 2
done

# Every user of the definitions (saga-<name>) gets $RABBITMQ_<NAME>_PASSWORD; the users come
# from the generated definitions file, so a newly registered participant needs no edit here.
# Passwords reach rabbitmqctl as arguments, visible only inside this container.
users=$(sed -n 's/^ *"name": "\(saga-[a-z0-9_-]*\)",$/\1/p' /etc/rabbitmq/definitions.json | sort -u)
for user in $users; do
    var="RABBITMQ_$(echo "${user#saga-}" | tr 'a-z-' 'A-Z_')_PASSWORD"
    eval "password=\${$var:-}"
    if [ -z "$password" ]; then
        echo "entrypoint: $var is not set (the password of broker user $user)" >&2
        exit 1
    fi
    rabbitmqctl --quiet change_password "$user" "$password"
done

# The operator (management UI, DLQ inspection): the only user with configure rights.
if ! rabbitmqctl --quiet add_user "$RABBITMQ_ADMIN_USER" "$RABBITMQ_ADMIN_PASSWORD" 2>/dev/null; then
    rabbitmqctl --quiet change_password "$RABBITMQ_ADMIN_USER" "$RABBITMQ_ADMIN_PASSWORD"
fi
rabbitmqctl --quiet set_user_tags "$RABBITMQ_ADMIN_USER" administrator
rabbitmqctl --quiet set_permissions -p saga "$RABBITMQ_ADMIN_USER" ".*" ".*" ".*"

touch "$ready"
status=0
wait "$server" || status=$?
# A signal interrupts the first wait; wait for the server to finish shutting down.
if kill -0 "$server" 2>/dev/null; then
    wait "$server" || status=$?
fi
exit "$status"
