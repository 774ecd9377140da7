"""Test harness shared by pytest and the integration playbooks: loop filesystems, Azurite, SAS."""
