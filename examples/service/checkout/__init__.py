"""The `checkout` example service; see server.py. Packaged into a zipapp by ../build.py."""
