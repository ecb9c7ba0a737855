"""Add-on logic that needs no bpy: request building, HTTP, launcher, frame bookkeeping.

Plain Python (stdlib only), so it runs inside Blender's Python and is tested without Blender.
"""
