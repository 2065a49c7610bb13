from mlx_sql.cli.app import main

main()
