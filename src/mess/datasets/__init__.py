"""Reproducible, offline, labelled audio: rendered music21 pieces, Wesnoth's soundtrack, synthetic files.

Submodules are imported on use: ``render`` needs music21 and fluidsynth, ``wesnoth`` apt-get.
"""
