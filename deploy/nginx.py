"""nginx on this machine, in front of a gunicorn: for ``./run serve`` and the
tests, never as the machine's own nginx.

``deploy/nginx.conf.template`` holds what goes inside nginx's ``http`` block
(the official image includes it from its own nginx.conf). Here it gets a
main configuration of its own: every file nginx writes (pid, temporary
bodies, access log) lives in one run folder, nginx stays in the foreground as
a child of whoever started it, and neither /etc/nginx nor port 80 is touched.
"""

import getpass
import grp
import os
import re
import shutil
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent / "nginx.conf.template"
#: The only variables substituted, as ``envsubst '${LISTEN} ${API_UPSTREAM}'`` does.
VARIABLES = ("LISTEN", "API_UPSTREAM")
TEMP_FOLDERS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def find():
    """The nginx binary (Debian's package puts it in /usr/sbin, which a
    non-root PATH may lack), or None."""
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


def render(listen, upstream, template=TEMPLATE):
    """The template with ``${LISTEN}``/``$LISTEN`` and ``${API_UPSTREAM}``/
    ``$API_UPSTREAM`` replaced, and nothing else: nginx's own ``$variables``
    stay (the same output as envsubst with that list; a test compares)."""
    values = {"LISTEN": listen, "API_UPSTREAM": upstream}
    names = "|".join(VARIABLES)
    pattern = rf"\$(?:\{{({names})\}}|({names})(?![A-Za-z0-9_]))"
    return re.sub(pattern, lambda match: values[match.group(1) or match.group(2)], Path(template).read_text())


def main_config(run_dir, site, *, worker_processes="auto"):
    """nginx.conf for a private nginx whose files all live in ``run_dir``,
    including ``site`` (the rendered template) in its http block."""
    run_dir = Path(run_dir).resolve()
    temp = "\n".join(f"    {name}_temp_path {run_dir / 'tmp' / name};" for name in TEMP_FOLDERS)
    # As root, nginx's workers would switch to "nobody", who cannot write in
    # run_dir: they keep the user who started it, as gunicorn does.
    user = f"user {getpass.getuser()} {grp.getgrgid(os.getegid()).gr_name};\n" if os.geteuid() == 0 else ""
    return f"""# Written by deploy/nginx.py: a private nginx around {site}.
daemon off;
{user}worker_processes {worker_processes};
pid {run_dir / 'nginx.pid'};
error_log stderr notice;
# A graceful stop (SIGQUIT) waits this long for requests in flight, as
# gunicorn does (graceful_timeout).
worker_shutdown_timeout 30s;
worker_rlimit_nofile 8192;

events {{
    worker_connections 4096;
}}

http {{
    default_type application/octet-stream;
    log_format followers '$remote_addr [$time_local] "$request" $status $body_bytes_sent '
                         '$request_time $upstream_response_time';
    access_log {run_dir / 'access.log'} followers;
{temp}
    include {Path(site).resolve()};
}}
"""


def prepare(run_dir, *, listen, upstream, worker_processes="auto"):
    """Write the site and the main configuration into ``run_dir``; returns
    the argv that runs nginx in the foreground on them."""
    run_dir = Path(run_dir).resolve()
    for name in TEMP_FOLDERS:
        (run_dir / "tmp" / name).mkdir(parents=True, exist_ok=True)
    site = run_dir / "followers.conf"
    site.write_text(render(listen, upstream))
    conf = run_dir / "nginx.conf"
    conf.write_text(main_config(run_dir, site, worker_processes=worker_processes))
    binary = find()
    if binary is None:
        raise FileNotFoundError("nginx is not installed (Debian: apt-get install nginx)")
    # -e: the error log before the configuration is read; -p: relative paths.
    return [binary, "-p", str(run_dir), "-c", str(conf), "-e", "stderr"]
