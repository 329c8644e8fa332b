from services.common.grpc_server import run_service
from services.common.settings import load_or_exit
from services.executor.config import ExecutorSettings
from services.executor.server import ExecutorServer

settings = load_or_exit(ExecutorSettings)
run_service(lambda: ExecutorServer(settings), settings)
