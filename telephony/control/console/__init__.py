"""The admin console: pages in the browser for a tenant's admins (and the operator) over the admin API.

The server renders each page's frame from templates (`templates/`, Jinja2), with the limits of the
forms taken from the persona and line models; the page's modules of JavaScript (`static/`, plain ES
modules, no build step) call the same admin API as any client, with the token the admin signed in
with, kept in the tab's sessionStorage and sent as a bearer token (no cookie, so no cross-site
request can act for the admin). What a token may see is decided by the API alone.
"""
