"""Registry clients of the configured regions, created lazily and closed together."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workers.config import Settings
from workers.replication.registry import RegistryClient
from workers.replication.store import CheckpointStore


class RegionClients:
    """One ``RegistryClient`` per region id in ``settings.regions`` (their connection pools)."""

    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession], checkpoints: CheckpointStore):
        self._settings = settings
        self._clients: dict[str, RegistryClient] = {}
        self.checkpoints = checkpoints

    def client(self, region: str) -> RegistryClient:
        """Raises ``ValueError`` naming the region when it is not configured."""
        existing = self._clients.get(region)
        if existing is not None:
            return existing
        config = self._settings.regions.get(region)
        if config is None:
            known = ", ".join(sorted(self._settings.regions)) or "none"
            raise ValueError(f"region {region!r} is not configured under regions: (configured: {known})")
        client = RegistryClient(
            config.registry, username=config.username, password=config.password, insecure=config.insecure
        )
        self._clients[region] = client
        return client

    def pair(self, source_region: str, remote_region: str) -> tuple[RegistryClient, RegistryClient]:
        return self.client(source_region), self.client(remote_region)

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
