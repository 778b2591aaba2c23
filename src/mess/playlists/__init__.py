"""Playlists from the similarity space: radio from seeds, a sonic path between two tracks, clusters.

Sits above search (it reads vector sets and resolves queries there) and below serve / cli.
:mod:`mess.playlists.formats` writes and reads M3U8 and XSPF; :mod:`mess.playlists.mpd`
hands playlists to a Music Player Daemon.
"""
