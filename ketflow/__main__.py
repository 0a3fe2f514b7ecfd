from ketflow.cli.run import main
import sys

sys.exit(main())
