"""The adapters of the ports: RabbitMQ and the in-memory broker for the transport
(infra.transport), and the MongoDB helpers the saga and document stores are built on."""
