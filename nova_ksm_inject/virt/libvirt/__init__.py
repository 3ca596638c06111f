"""The nova libvirt compute driver of nova-ksm-inject.

``driver.py`` needs nova (``pip install nova-ksm-inject[nova]``);
``injection.py`` and ``ksm_startup.py`` hold its nova-independent logic.
"""
