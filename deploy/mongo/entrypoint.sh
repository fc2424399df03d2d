#!/bin/sh
# Entry point of the mongo service: the image's own entry point, plus the replica set's key.
#
# A replica set with authentication needs a key file with which its members authenticate
# each other. It is generated on the first start into its own volume and never committed.
# The image's entry point then creates the root user and runs create-app-user.sh (first
# start only, from MONGO_INITDB_ROOT_* and MONGO_APP_*), and starts mongod with --auth.
set -eu

key=/data/key/mongo.key
if [ ! -s "$key" ]; then
    umask 077
    # 756 random bytes are 1008 base64 characters; MongoDB accepts 6 to 1024.
    head -c 756 /dev/urandom | base64 | tr -d '\n' > "$key.tmp"
    mv "$key.tmp" "$key"
fi
# mongod refuses a key file that anyone but its owner can read.
chown mongodb:mongodb "$key"
chmod 400 "$key"

exec docker-entrypoint.sh mongod --replSet rs0 --bind_ip_all --keyFile "$key"
