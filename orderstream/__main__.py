from orderstream.cli import main

main()
