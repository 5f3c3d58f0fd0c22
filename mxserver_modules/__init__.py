"""First-party mxserver modules.

The package is named ``mxserver_modules`` rather than ``modules`` so that
installing mxserver does not claim a generic top-level name in site-packages.

Everything here is loaded only through entry points declared in setup.cfg,
exactly as a third party's module would be; the core never imports this
package.
"""
