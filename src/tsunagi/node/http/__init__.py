"""The node's web pages and what serves them: the stack later pages build on.

- ``pages.py``: the routes, server-rendered with Jinja2 (``templates/``, every page extends
  ``base.html``); refusals are pages with their HTTP status and a message saying what to do.
- ``events.py``: server-sent events; one feed of new blocks, a bounded queue per browser.
- ``tls.py``: HTTPS for the listener; a development certificate made and kept for you.
- ``static/``: the stylesheet and a little JavaScript, served by the node itself.

Everything a page uses comes from the node (the Content-Security-Policy is
``default-src 'self'``): no CDN, no fonts or scripts from elsewhere, no inline scripts or
styles (a page's script is a file in ``static/``, its look a rule in ``tsunagi.css``). The pages
mount on the REST app (``tsunagi.node.rest.create_app``) with ``add_pages(app)`` and share its
reader threads and its stop signal. A later page adds its routes to the same app through
``app.state.pages`` (a :class:`~tsunagi.node.http.pages.PageContext`: ``render``, ``read``,
the feed), raises ``PageRefusal`` for what it cannot show, and is tested in a real browser
(tests/test_pages_browser.py shows how).
"""
