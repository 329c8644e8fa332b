from services.common.grpc_server import run_service
from services.common.settings import load_or_exit
from services.rag.config import RagSettings
from services.rag.server import RagServer

settings = load_or_exit(RagSettings)
run_service(lambda: RagServer(settings), settings)
