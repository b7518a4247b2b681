"""The WireGuard link from an edge node to its cloud peers (client mode).

``wgquick`` renders a wg-quick configuration from typed settings, ``dump`` reads what
``wg show <interface> dump`` reports, and ``monitor`` polls it and publishes ``link`` events.
"""
