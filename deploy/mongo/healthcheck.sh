#!/bin/sh
# Healthcheck of the mongo service: healthy once the single-node replica set has a writable
# primary; initiates the replica set on the first run. Logs in as root (the password reaches
# mongosh as an argument, visible only inside this container).
exec mongosh --quiet --authenticationDatabase admin \
    -u "$MONGO_INITDB_ROOT_USERNAME" -p "$MONGO_INITDB_ROOT_PASSWORD" --eval '
let healthy = false;
try {
  healthy = rs.status().ok === 1 && db.hello().isWritablePrimary === true;
} catch (e) {
  rs.initiate({_id: "rs0", members: [{_id: 0, host: "mongo:27017"}]});
}
quit(healthy ? 0 : 1);
'
