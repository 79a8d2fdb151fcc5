"""How the service is run outside the tests: nginx's configuration
(``nginx.conf.template``), the systemd units, and ``./run serve``'s
supervisor (``python -m deploy.supervisor``). docs/deploying.md explains
them."""
