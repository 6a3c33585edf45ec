from patrol_deploy.cli.main import main

main()
