# Stands in for rabbitmq:3-management: Debian's RabbitMQ with the management plugin. The server
# runs as its own user with a fixed node name and logs to stdout (Debian's wrapper, started as
# root, hides the logs and swallows SIGTERM).
FROM localhost/debian:bookworm
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rabbitmq-server \
    && rm -rf /var/lib/apt/lists/* \
    && rabbitmq-plugins enable --offline rabbitmq_management \
    && printf 'loopback_users = none\nlisteners.tcp.default = 5672\n' > /etc/rabbitmq/rabbitmq.conf
ENV HOME=/var/lib/rabbitmq RABBITMQ_LOGS=- RABBITMQ_NODENAME=rabbit@localhost
USER rabbitmq
CMD ["/usr/lib/rabbitmq/bin/rabbitmq-server"]
