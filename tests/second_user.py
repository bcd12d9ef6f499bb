"""Who plays the attacker in tests about other users on the same machine."""

# A second local user (made by conftest's `other_user` fixture, as root).
OTHER_USER = "pmp-other"
