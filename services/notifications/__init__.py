"""The notifications service: Socket.IO notifications pushed to connected users."""
