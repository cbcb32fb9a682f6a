# Stands in for python:3.11-slim where no image can be pulled: Debian 12's own Python 3.11,
# on a base image made with debootstrap from Debian's packages (tests/compose/stack.py).
FROM localhost/debian:bookworm
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
           python3 python3-venv ca-certificates \
    && ln -s /usr/bin/python3 /usr/local/bin/python \
    && rm -rf /var/lib/apt/lists/*
CMD ["python3"]
