"""The inference process. The local model arrives with the chat-path issue; until then it serves
health and reflection and has no dependencies to wait for."""

from __future__ import annotations

import grpc

from goblin.v1 import inference_pb2_grpc
from services.common.stores import StoreBackedService
from services.inference.config import InferenceSettings


class InferenceServer(StoreBackedService):
    name = "inference"
    grpc_service_names = ["goblin.v1.Inference"]

    def __init__(self, settings: InferenceSettings) -> None:
        self.settings = settings
        self.stores = []

    def register(self, server: grpc.aio.Server) -> None:
        inference_pb2_grpc.add_InferenceServicer_to_server(inference_pb2_grpc.InferenceServicer(), server)
