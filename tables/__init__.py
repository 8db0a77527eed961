"""Faust tables of dmp-faust, one per module.

A table's name is its changelog topic (``{DMP_TOPIC_PREFIX}-{name}-changelog``):
renaming one loses its state, so names are schema. Keys and values are bytes
(``raw`` serializers); their formats live in the domain core.
"""
