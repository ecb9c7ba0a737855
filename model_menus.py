"""Model menus of the scene settings (checkpoint, motion module, LoRA, SparseCtrl, IP-Adapter):
the names the backend listed at its last check, kept across Blender restarts.

Nothing is fetched while drawing: a check (on a worker thread) hands the backend's listing to
`state.remember_models()`, which keeps it in memory and in a file in the extension's user
folder. Each menu writes the chosen name into a plain string property, so the .blend keeps the
name, not a position in a list that changes with the models folder.
"""

from __future__ import annotations

from bpy.props import EnumProperty

from . import state
from .client.model_list import Listing

DEFAULT_MODEL = "DEFAULT"
MenuItems = list[tuple[str, str, str, int]]
_menu_items: dict[str, MenuItems] = {}  # Blender needs the item strings kept alive


def menu_items(listing: Listing, kind: str, current: str, default_label: str) -> MenuItems:
    """The items of one menu: the backend's default, the listed names, and the current name
    when the listing does not have it (so a .blend from elsewhere shows what it asks for)."""
    names = getattr(listing.choices, kind, ())
    listed = [(DEFAULT_MODEL, default_label, "Let the backend choose", 0)]
    said = f"Listed by the backend at its last check ({listing.when()}); Check to refresh"
    listed += [(name, name, said, i + 1) for i, name in enumerate(names)]
    if current and current not in names:
        listed.append((current, f"{current} (not listed)", "Not in the last listing", len(listed)))
    return listed


def model_menu(attr: str, kind: str, default_label: str) -> EnumProperty:
    """A menu over the listed models of `kind` (a ModelChoices field) that reads and writes the
    name in the string property `attr`."""

    def items(self, _context) -> MenuItems:
        listed = menu_items(state.listing(), kind, getattr(self, attr), default_label)
        _menu_items[f"{attr}:{self.as_pointer()}"] = listed
        return listed

    def get(self) -> int:
        current = getattr(self, attr)
        return next((n for ident, _, _, n in items(self, None) if ident == current), 0)

    def set(self, value: int) -> None:
        ident = next((i for i, _, _, n in items(self, None) if n == value), DEFAULT_MODEL)
        setattr(self, attr, "" if ident == DEFAULT_MODEL else ident)

    return EnumProperty(name=attr.replace("_", " ").title(), items=items, get=get, set=set)
