from services.common.grpc_server import run_service
from services.common.settings import load_or_exit
from services.router.config import RouterSettings
from services.router.server import RouterServer

settings = load_or_exit(RouterSettings)
run_service(lambda: RouterServer(settings), settings)
