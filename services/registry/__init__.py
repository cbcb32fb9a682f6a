"""The registry service: service registry speaking the Consul HTTP API subset."""
