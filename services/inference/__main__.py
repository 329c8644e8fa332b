from services.common.grpc_server import run_service
from services.common.settings import load_or_exit
from services.inference.config import InferenceSettings
from services.inference.server import InferenceServer

settings = load_or_exit(InferenceSettings)
run_service(lambda: InferenceServer(settings), settings)
