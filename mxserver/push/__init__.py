"""Push notifications: rule evaluation, notification counts and pushers (modules/push.md)."""
