"""The client's own address behind nginx: ``REMOTE_ADDR`` from
``X-Forwarded-For``, believed only when the request comes from a proxy we
trust (gunicorn's ``forwarded_allow_ips``)."""

import ipaddress


class ForwardedClient:
    """WSGI middleware: behind a trusted proxy, ``REMOTE_ADDR`` becomes the
    address the proxy got the request from, so that gunicorn's access log,
    Falcon's ``req.remote_addr`` and error logs name the real client.

    nginx (deploy/nginx.conf.template) sets ``X-Forwarded-For`` to that one
    address; the last entry is read, the one the nearest proxy wrote. From any
    other peer the header is a claim anyone can make: it is removed, so that
    nothing downstream (``req.access_route``) reads it by mistake.

    Parameters:
      app: The WSGI application.
      trusted(list[str]): Addresses or networks of the proxies, ``"*"`` for
        any peer (gunicorn's ``forwarded_allow_ips``). A peer without an IP
        address (a UNIX socket) is trusted, as gunicorn does.
    """

    def __init__(self, app, *, trusted):
        self.app = app
        self.trust_all = "*" in trusted
        self.networks = [ipaddress.ip_network(entry.strip()) for entry in trusted if entry.strip() not in ("", "*")]

    def __call__(self, environ, start_response):
        forwarded = environ.pop("HTTP_X_FORWARDED_FOR", None)
        if forwarded is not None and self._trusts(environ.get("REMOTE_ADDR", "")):
            environ["HTTP_X_FORWARDED_FOR"] = forwarded
            client = forwarded.rsplit(",", 1)[-1].strip()
            if _is_ip(client):
                environ["REMOTE_ADDR"] = client
        return self.app(environ, start_response)

    def _trusts(self, peer):
        if self.trust_all or not _is_ip(peer):
            return True
        address = ipaddress.ip_address(peer)
        return any(address in network for network in self.networks)


def _is_ip(text):
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
