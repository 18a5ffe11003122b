from streamapp.cli.main import main

main()
