# Sourced by the mongo image's entry point on the first start only (an empty data volume),
# after it created the root user, with `mongo` holding the shell command. Creates the user
# the six processes log in as: readWrite on the system's databases and nothing else. The
# names assume the default SAGA_MONGO_DB=saga (<prefix>_<owner>, infra/settings.py).
"${mongo[@]}" admin <<'EOJS'
db.createUser({
  user: process.env.MONGO_APP_USER,
  pwd: process.env.MONGO_APP_PASSWORD,
  roles: ["saga_orchestrator", "saga_order", "saga_inventory", "saga_payment",
          "saga_shipping", "saga_notification"].map((name) => ({role: "readWrite", db: name})),
})
EOJS
