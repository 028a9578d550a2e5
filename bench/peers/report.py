def main(argv): pass
