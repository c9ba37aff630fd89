"""The plugin's tool: a greeter that remembers how many people it greeted."""

from __future__ import annotations

from typing import Any

from actors import ToolActor, command


class Greeter(ToolActor):
    """Greets people by name. Config: ``greeting`` (default "Hello")."""

    def on_init(self, config: dict[str, Any]) -> None:
        self.greeting = str(config.get("greeting", "Hello"))
        self.count = 0

    @command
    def greet(self, name: str, excited: bool = False) -> str:
        """Greet someone by name; with excited=true, loudly."""
        self.count += 1
        return f"{self.greeting}, {name}{'!' if excited else '.'}"

    @command
    def greeted(self) -> int:
        """How many greetings this instance has given."""
        return self.count
