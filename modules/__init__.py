"""First-party mxserver modules.

Everything here is loaded only through entry points declared in setup.cfg,
exactly as a third party's module would be; the core never imports this
package.
"""
