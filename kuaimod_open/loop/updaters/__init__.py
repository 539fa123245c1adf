"""Updaters of the common-law loop: turn stored human decisions into candidate policies, routers, adapters."""
